package main

import (
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
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
	return applyConfig(cmd, path, text)
}

// applyConfig is applyConfigFile on the file's contents.
func applyConfig(cmd *cobra.Command, path string, text []byte) (command []string, err error) {
	var doc map[string]any
	if err := toml.Unmarshal(text, &doc); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, fmt.Errorf("%s:%d:%d: %v", path, row, col, de)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	line := keyLines(text)
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if line[keys[i]] != line[keys[j]] {
			return line[keys[i]] < line[keys[j]]
		}
		return keys[i] < keys[j]
	})
	flags := cmd.Flags()
	for _, key := range keys {
		val := doc[key]
		where := fmt.Sprintf("%s:%d", path, line[key])
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

// keyLines maps each top-level key of a TOML document (one that parses) to
// the line where it first appears: in a key = value line before the first
// table, dotted (key.sub = 1) or not, or as a table header ([key],
// [key.sub], [[key]]). A key is matched by its decoded name, so quoted
// keys ("key", 'key', "k\u0065y") are found too.
func keyLines(text []byte) map[string]int {
	lines := map[string]int{}
	var p unstable.Parser
	p.Reset(text)
	inTable := false
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			inTable = true
		case unstable.KeyValue:
			if inTable {
				continue // a key of the table above
			}
		default:
			continue
		}
		it := e.Key()
		if !it.Next() {
			continue
		}
		k := it.Node()
		if _, seen := lines[string(k.Data)]; !seen {
			lines[string(k.Data)] = p.Shape(k.Raw).Start.Line
		}
	}
	return lines
}
