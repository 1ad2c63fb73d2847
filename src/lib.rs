//! Sextant: a Kubernetes cluster DNS server that reads CoreDNS Corefiles.
