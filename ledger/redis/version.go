package redis

import (
	"fmt"
	"strconv"
	"strings"
)

// The oldest Redis server Open accepts: the indexes' TTLs are kept with
// EXPIRE NX and EXPIRE GT (Redis 7.0).
const minMajor, minMinor = 7, 0

// serverVersion reads major and minor of redis_version from the answer to
// INFO server.
func serverVersion(info string) (major, minor int, err error) {
	for line := range strings.Lines(info) {
		v, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), "redis_version:")
		if !ok {
			continue
		}
		parts := strings.SplitN(v, ".", 3)
		if len(parts) < 2 {
			return 0, 0, fmt.Errorf("unreadable redis_version %q", v)
		}
		major, err1 := strconv.Atoi(parts[0])
		minor, err2 := strconv.Atoi(parts[1])
		if err1 != nil || err2 != nil || major < 0 || minor < 0 {
			return 0, 0, fmt.Errorf("unreadable redis_version %q", v)
		}
		return major, minor, nil
	}
	return 0, 0, fmt.Errorf("no redis_version in INFO server")
}

// checkVersion refuses a server older than minMajor.minMinor, or one whose version
// cannot be read, and a Redis Cluster node (cluster_enabled:1): a token's
// record and its index entries fall in different hash slots, and Cluster
// refuses a transaction across slots.
func checkVersion(info string) error {
	for line := range strings.Lines(info) {
		if strings.TrimRight(line, "\r\n") == "cluster_enabled:1" {
			return fmt.Errorf("redis server is a Redis Cluster node: the ledger writes a token's record and its index entries in one transaction across hash slots, which Cluster refuses; use a standalone Redis (with replicas)")
		}
	}
	major, minor, err := serverVersion(info)
	if err != nil {
		return fmt.Errorf("redis server version: %w", err)
	}
	if major < minMajor || (major == minMajor && minor < minMinor) {
		return fmt.Errorf("redis server %d.%d is too old: the ledger needs Redis %d.%d or newer (EXPIRE NX and GT)",
			major, minor, minMajor, minMinor)
	}
	return nil
}
