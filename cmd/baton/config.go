package main

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// applyConfigFile reads a TOML file whose keys are the command's long flag
// names (listen = ["tcp://127.0.0.1:8080"], ready-http = "...",
// drain-timeout = "30s", ...) plus command = ["./app", "arg"], and sets
// every flag the command line did not set: the command line wins. Unknown
// keys and bad values are refused with their line.
func applyConfigFile(cmd *cobra.Command, path string) (command []string, err error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := toml.Unmarshal(text, &doc); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, fmt.Errorf("%s:%d:%d: %v", path, row, col, de)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	lines := strings.Split(string(text), "\n")
	lineOf := func(key string) int {
		re := regexp.MustCompile(`^\s*["']?` + regexp.QuoteMeta(key) + `["']?\s*=`)
		for i, l := range lines {
			if re.MatchString(l) {
				return i + 1
			}
		}
		return 0
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return lineOf(keys[i]) < lineOf(keys[j]) })
	flags := cmd.Flags()
	for _, key := range keys {
		val := doc[key]
		where := fmt.Sprintf("%s:%d", path, lineOf(key))
		if key == "command" {
			if command, err = stringList(val); err != nil || len(command) == 0 {
				return nil, fmt.Errorf("%s: command must be a non-empty list of strings, e.g. command = [\"./app\", \"-flag\"]", where)
			}
			continue
		}
		f := flags.Lookup(key)
		if f == nil || key == "config" || key == "help" {
			return nil, fmt.Errorf("%s: unknown key %q (the keys are the long flags of `baton %s`, and command)", where, key, cmd.Name())
		}
		if f.Changed || (readinessFlags[key] && anyChanged(flags, readinessFlags)) {
			continue // the command line wins (readiness is one choice)
		}
		if err := setFlag(f, val); err != nil {
			return nil, fmt.Errorf("%s: bad value for %s: %v", where, key, err)
		}
	}
	return command, nil
}

func setFlag(f *pflag.Flag, val any) error {
	if list, ok := val.([]any); ok {
		if f.Value.Type() != "stringArray" {
			return fmt.Errorf("a list is only allowed for repeatable flags")
		}
		items, err := stringList(list)
		if err != nil {
			return err
		}
		for _, it := range items {
			if err := f.Value.Set(it); err != nil {
				return err
			}
		}
		return nil
	}
	switch v := val.(type) {
	case string, int64, bool, float64:
		return f.Value.Set(fmt.Sprint(v))
	}
	return fmt.Errorf("unsupported value %v (use a string, a number, a boolean or a list of strings)", val)
}

func stringList(val any) ([]string, error) {
	list, ok := val.([]any)
	if !ok {
		return nil, fmt.Errorf("want a list of strings")
	}
	out := make([]string, 0, len(list))
	for _, it := range list {
		s, ok := it.(string)
		if !ok {
			return nil, fmt.Errorf("want a list of strings, found %v", it)
		}
		out = append(out, s)
	}
	return out, nil
}

// readinessFlags are one choice: one given on the command line replaces
// whichever the file chose.
var readinessFlags = map[string]bool{"ready-http": true, "ready-tcp": true, "ready-delay": true}

func anyChanged(flags *pflag.FlagSet, names map[string]bool) bool {
	for n := range names {
		if f := flags.Lookup(n); f != nil && f.Changed {
			return true
		}
	}
	return false
}
