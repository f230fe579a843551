// Package deployments holds Fleetgate's deployment material (Kubernetes manifests under kubernetes/,
// Dockerfiles and a compose file under docker/) and the offline tests that check it against the
// Kubernetes API types and the real binaries' flags. It has no code of its own.
package deployments
