//go:build tools

// Package tools pins versitygw, the S3 server of the devcluster (POSIX backend: a bucket
// is a directory), used by the s3:// storage tests and the demo.
package tools

import (
	_ "github.com/versity/versitygw/cmd/versitygw"
)
