"""Pure facts: the kinds and names, the spec parser, the CRD generator, the errors."""
