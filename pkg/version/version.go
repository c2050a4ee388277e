// Package version holds the build's version, commit and the shadow image that matches it.
package version

import "strings"

// Set at build time with -ldflags "-X github.com/kubectl-kt/kt/pkg/version.Version=v1.2.3 ...".
var (
	// Version is the release version, with a leading "v".
	Version = "v0.1.0-dev"
	// Commit is the git commit the binary was built from.
	Commit = "unknown"
	// ImageRepository is where the shadow image for this version lives.
	ImageRepository = "ghcr.io/kubectl-kt/shadow"
)

// ShadowImage returns the default shadow image: the repository tagged with this client's
// version, so that a client always runs an agent built from the same source.
func ShadowImage() string {
	// Image tags may not hold "+", which semver build metadata uses.
	return ImageRepository + ":" + strings.ReplaceAll(Version, "+", "-")
}
