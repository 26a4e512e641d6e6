package forensics

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Unsealed describes the parts a writer still has open under a store's
// directory: their events are not yet visible to queries.
type Unsealed struct {
	Parts int
	Bytes int64
	// FirstHour is the earliest hour partition with an open part: events
	// from then on may be missing from an answer.
	FirstHour time.Time
	// LastWrite is the last time an open part was written.
	LastWrite time.Time
}

// OpenParts reports the parts not yet sealed in dir (the directory a
// Writer writes into).
func OpenParts(dir string) (Unsealed, error) {
	var u Unsealed
	root := filepath.Join(dir, eventsDir)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		name := d.Name()
		if d.IsDir() || !strings.HasPrefix(name, hiddenPrefix+partPrefix) || !strings.HasSuffix(name, tempSuffix) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil // sealed (renamed) while we looked
		}
		h, err := time.Parse(hourLayout, strings.TrimPrefix(filepath.Base(filepath.Dir(p)), hourPrefix))
		if err != nil {
			return nil
		}
		u.Parts++
		u.Bytes += info.Size()
		if u.FirstHour.IsZero() || h.Before(u.FirstHour) {
			u.FirstHour = h
		}
		if info.ModTime().After(u.LastWrite) {
			u.LastWrite = info.ModTime()
		}
		return nil
	})
	return u, err
}
