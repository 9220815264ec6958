//go:build !linux

package installer

import "os"

// dropCache is a no-op where the page cache cannot be advised.
func dropCache(*os.File) {}

// statStamp cannot tell a change time here: every pass compares content.
func statStamp(string) (fileStamp, bool) { return fileStamp{}, false }
