"""Drop-in tests: Turnstile's Rasa stores loaded and used by real Rasa code (``-m rasa``)."""
