//go:build unix && !linux && !darwin && !freebsd

package ctl

import "errors"

func peerUID(fd int) (int, error) {
	return -1, errors.New("peer credentials are not implemented on this system")
}
