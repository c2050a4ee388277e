package dns

// Per-domain ("split") DNS of the system: on macOS a file per domain in /etc/resolver, on
// Windows Name Resolution Policy Table rules. Names under those domains go to kt's local
// server; everything else is resolved as before. Linux uses resolv.conf or systemd-resolved
// instead. Neither is tested by this project's CI, which runs on Linux only.

// SplitComment marks kt's entries, so that cleanup finds them after a crash.
const SplitComment = "kubectl kt connect"
