"""The gateway's shared logic: accounts and auth, limits, channels, provisioning, the agent harness.

Each function in ``functions/<name>/`` (a Knative Service or CloudEvents
function of its own, ``func.yaml`` beside it) is a thin entry over this package.
"""
