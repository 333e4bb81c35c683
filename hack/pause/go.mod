// The node tier's sandbox ("pause") image program: Turnstile's own, no dependencies.
// Built by hack/build-kube.sh into the same cache as the Kubernetes binaries.

module turnstile.dev/hack/pause

go 1.26.0
