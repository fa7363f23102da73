package supervisor

import "os"

// restoreNonblock: proxy mode is not available on Windows (proxySupported).
func restoreNonblock(*os.File) {}
