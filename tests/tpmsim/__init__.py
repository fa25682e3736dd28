"""Software TPMs for tests: swtpm processes, and the bridge that lets tss.js talk to them."""
