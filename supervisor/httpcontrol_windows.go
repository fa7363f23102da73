package supervisor

import "io/fs"

// checkTokenFile: on Windows the file's ACL decides who may read it; the
// mode bits say nothing about it (protect the file as the service's
// directory is).
func checkTokenFile(string, fs.FileInfo) error { return nil }
