package main

import (
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
)

// wantProgress says whether to draw a progress bar on w: when asked for
// (--progress), or when w is a terminal and the output is not --json.
func wantProgress(w io.Writer, asked, asJSON bool) bool {
	if asked {
		return true
	}
	f, ok := w.(*os.File)
	if !ok || asJSON {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// byteBar is a progress bar over size bytes (-1: unknown) on w.
func byteBar(w io.Writer, what string, size int64) *progressbar.ProgressBar {
	return progressbar.NewOptions64(size, progressbar.OptionSetWriter(w), progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true), progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(), progressbar.OptionOnCompletion(func() { _, _ = io.WriteString(w, "\n") }))
}
