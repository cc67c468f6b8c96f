"""Serving past one machine: Kubernetes manifests rendered from the templates in `k8s/` (`kubernetes.py`,
`mmserve deploy k8s`). The image they run is built from deploy/docker/Dockerfile (README, Scaling out)."""
