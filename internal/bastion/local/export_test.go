package local

// NoPidfd makes b watch its builds' exits as on a kernel without pidfds.
func NoPidfd(b *Bastion) { b.noPidfd = true }
