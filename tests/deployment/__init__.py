"""Deployment artefacts: kustomize builds, Kubernetes schemas, broker and server configs, Dockerfiles."""
