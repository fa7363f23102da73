package supervisor

import (
	"errors"
	"net"
	"os"
)

// publicListeners: proxy mode is not available on Windows yet
// (Config.Validate refuses it: proxySupported).
func (h *host) publicListeners() ([]net.Listener, error) {
	return nil, errors.New("--proxy is not available on Windows yet")
}

// acceptQueue: not known on Windows.
func acceptQueue(*os.File) (int, bool) { return 0, false }
