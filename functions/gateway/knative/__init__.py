"""Each person's agent on Knative: the objects (:mod:`.manifests`, the ONE template of the
per-person Knative Service, PVC and token Secret, shared with ``knative/``'s kustomize tier
template), the API client (:mod:`.api`), the provisioner (:mod:`.provisioner`) and the
lifecycle sweeper (:mod:`.sweeper`, ``python -m gateway.knative.sweeper``)."""
