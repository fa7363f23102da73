// Package testlint checks rules of baton's end-to-end tests that a
// reviewer would otherwise have to remember: a test waits for an
// observable event, never for a stretch of time (time.Sleep and a bare
// <-time.After only in the named polling and pacing helpers); a pid is
// signalled only through the helpers that refuse pid <= 0 (syscall.Kill,
// unix.Kill and os.FindProcess nowhere else); a skip says why (no
// t.Skip(), t.Skip(""), t.Skipf("") or t.SkipNow()); and a test that
// needs root does not skip by itself (testenv.Missing does, and fails
// under CI=true, where a root-only test skipped would pass as green).
//
// It reads the source with go/parser: no build, no type checking, so it
// sees every file whatever its build tags. It is imported by tests only.
package testlint

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Rule names, as reported in a Finding.
const (
	RuleSleep  = "sleep"  // time.Sleep or a bare <-time.After outside the allowed helpers
	RuleSignal = "signal" // syscall.Kill, unix.Kill or os.FindProcess outside the allowed helpers
	RuleSkip   = "skip"   // a skip that does not say why
	RuleRoot   = "root"   // t.Skip for want of root: testenv.Missing instead
)

// Finding is one broken rule.
type Finding struct {
	Pos  token.Position
	Rule string
	What string
}

func (f Finding) String() string { return fmt.Sprintf("%s: %s: %s", f.Pos, f.Rule, f.What) }

// CheckDir checks every .go file of dir (not its subdirectories). allowed
// names the top-level functions (and methods) that may sleep and signal:
// the helpers that poll with a deadline, pace a loop, or guard a pid.
func CheckDir(dir string, allowed map[string]bool) ([]Finding, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("testlint: no Go files in %s", dir)
	}
	var out []Finding
	for _, p := range paths {
		src, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		fs, err := CheckSource(p, src, allowed)
		if err != nil {
			return nil, err
		}
		out = append(out, fs...)
	}
	return out, nil
}

// CheckSource checks one file's source; name is used in positions.
func CheckSource(name string, src []byte, allowed map[string]bool) ([]Finding, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, name, src, parser.SkipObjectResolution)
	if err != nil {
		return nil, fmt.Errorf("testlint: %w", err)
	}
	c := &checker{fset: fset, imports: importNames(f), selectCase: map[ast.Stmt]bool{}, euidBody: map[ast.Node]bool{}}
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		c.inAllowed = ok && allowed[fn.Name.Name]
		ast.Inspect(d, c.visit)
	}
	sort.Slice(c.found, func(i, j int) bool { return c.found[i].Pos.Offset < c.found[j].Pos.Offset })
	return c.found, nil
}

type checker struct {
	fset       *token.FileSet
	imports    map[string]string // local name -> import path
	inAllowed  bool
	found      []Finding
	selectCase map[ast.Stmt]bool // receives of a select case: not bare
	euidBody   map[ast.Node]bool // skip calls in the body of an if on os.Geteuid()
}

func (c *checker) add(n ast.Node, rule, what string) {
	c.found = append(c.found, Finding{Pos: c.fset.Position(n.Pos()), Rule: rule, What: what})
}

// pkgFunc tells whether e is path.name (through whatever name the file
// imports path as).
func (c *checker) pkgFunc(e ast.Expr, path, name string) bool {
	sel, ok := e.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != name {
		return false
	}
	id, ok := sel.X.(*ast.Ident)
	return ok && c.imports[id.Name] == path
}

func (c *checker) visit(n ast.Node) bool {
	switch n := n.(type) {
	case *ast.SelectorExpr:
		if c.inAllowed {
			break
		}
		switch {
		case c.pkgFunc(n, "time", "Sleep"):
			c.add(n, RuleSleep, "time.Sleep outside the polling and pacing helpers: wait for an event (waitFor/pollUntil)")
		case c.pkgFunc(n, "syscall", "Kill"), c.pkgFunc(n, "golang.org/x/sys/unix", "Kill"):
			c.add(n, RuleSignal, "a raw kill: signal through the helper that refuses pid <= 0")
		case c.pkgFunc(n, "os", "FindProcess"):
			c.add(n, RuleSignal, "os.FindProcess: signal through the helper that refuses pid <= 0")
		}
	case *ast.IfStmt:
		// Inspect visits the body after the if, so the skips under it
		// are marked before they are reached.
		if (c.callsGeteuid(n.Init) || c.callsGeteuid(n.Cond)) && testsNotZero(n.Cond) {
			ast.Inspect(n.Body, func(m ast.Node) bool {
				if call, ok := m.(*ast.CallExpr); ok {
					c.euidBody[call] = true
				}
				return true
			})
		}
	case *ast.CommClause:
		if n.Comm != nil {
			c.selectCase[n.Comm] = true
		}
	case *ast.ExprStmt:
		// <-time.After(d) on its own is a sleep by another name (in a
		// select it is a deadline for something else).
		if u, ok := n.X.(*ast.UnaryExpr); ok && u.Op == token.ARROW && !c.inAllowed && !c.selectCase[n] {
			if call, ok := u.X.(*ast.CallExpr); ok && c.pkgFunc(call.Fun, "time", "After") {
				c.add(n, RuleSleep, "a bare <-time.After is a sleep: wait for an event (waitFor/pollUntil)")
			}
		}
	case *ast.CallExpr:
		sel, ok := n.Fun.(*ast.SelectorExpr)
		if !ok {
			break
		}
		if _, isPkg := c.imports[identName(sel.X)]; isPkg {
			break // a package's Skip function, not a test's
		}
		switch sel.Sel.Name {
		case "SkipNow":
			c.add(n, RuleSkip, "SkipNow says nothing: t.Skip(\"why\")")
		case "Skip", "Skipf":
			switch {
			case len(n.Args) == 0 || emptyString(n.Args[0]):
				c.add(n, RuleSkip, sel.Sel.Name+" without a reason: say why")
			case c.euidBody[n] || mentionsRoot(n.Args[0]):
				c.add(n, RuleRoot, sel.Sel.Name+" for want of root: testenv.Missing (fails under CI=true)")
			}
		}
	}
	return true
}

// callsGeteuid tells whether n (an if's init or condition, perhaps nil)
// calls os.Geteuid anywhere.
func (c *checker) callsGeteuid(n ast.Node) bool {
	if n == nil {
		return false
	}
	found := false
	ast.Inspect(n, func(m ast.Node) bool {
		if call, ok := m.(*ast.CallExpr); ok && c.pkgFunc(call.Fun, "os", "Geteuid") {
			found = true
		}
		return !found
	})
	return found
}

// testsNotZero tells whether cond compares something with 0 by != or >
// (anywhere in it): "not root, skip". A skip because the test runs as
// root (== 0: permissions are bypassed) is a reason, not a missing
// dependency.
func testsNotZero(cond ast.Expr) bool {
	found := false
	ast.Inspect(cond, func(m ast.Node) bool {
		if b, ok := m.(*ast.BinaryExpr); ok && (b.Op == token.NEQ || b.Op == token.GTR) {
			if lit, ok := b.Y.(*ast.BasicLit); ok && lit.Kind == token.INT && lit.Value == "0" {
				found = true
			}
		}
		return !found
	})
	return found
}

// mentionsRoot tells whether e is a string literal saying that root is
// wanted ("needs root", "requires root", "not root", "without root").
func mentionsRoot(e ast.Expr) bool {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return false
	}
	s, err := strconv.Unquote(lit.Value)
	return err == nil && rootWord.MatchString(s)
}

var rootWord = regexp.MustCompile(`(?i)\b(needs?|requires?|wants?|not|without|only as|must run as)\W+(\w+\W+)?root\b`)

func identName(e ast.Expr) string {
	if id, ok := e.(*ast.Ident); ok {
		return id.Name
	}
	return ""
}

// emptyString tells whether e is a string literal with nothing in it but
// blanks.
func emptyString(e ast.Expr) bool {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return false
	}
	s, err := strconv.Unquote(lit.Value)
	return err == nil && strings.TrimSpace(s) == ""
}

// importNames maps the names a file uses for its imports to their paths
// (the last path element unless renamed; blank and dot imports are left
// out).
func importNames(f *ast.File) map[string]string {
	m := map[string]string{}
	for _, imp := range f.Imports {
		path, err := strconv.Unquote(imp.Path.Value)
		if err != nil {
			continue
		}
		name := path[strings.LastIndex(path, "/")+1:]
		if imp.Name != nil {
			name = imp.Name.Name
		}
		if name == "_" || name == "." {
			continue
		}
		m[name] = path
	}
	return m
}
