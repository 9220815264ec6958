// Package envflag gives command-line flags environment variables that set
// them when the command line does not, as Kubernetes manifests and Helm
// charts configure Skiff's binaries. The command line always wins; a
// malformed variable is an error that names it, never silently ignored;
// and each flag's help says which variable sets it.
package envflag

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

// FlagSet is a flag.FlagSet whose flags may each have a variable.
type FlagSet struct {
	*flag.FlagSet
	env map[string]string // flag name → variable
}

// New returns an empty FlagSet that returns parse errors (ContinueOnError).
func New(name string) *FlagSet {
	return &FlagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), env: map[string]string{}}
}

// Env lets variable env set the already defined flag name.
func (f *FlagSet) Env(name, env string) { f.env[name] = env }

// StringVar defines a string flag set by variable env.
func (f *FlagSet) StringVar(p *string, name, env, def, usage string) {
	f.FlagSet.StringVar(p, name, def, usage)
	f.Env(name, env)
}

// IntVar defines an int flag set by variable env.
func (f *FlagSet) IntVar(p *int, name, env string, def int, usage string) {
	f.FlagSet.IntVar(p, name, def, usage)
	f.Env(name, env)
}

// BoolVar defines a bool flag set by variable env.
func (f *FlagSet) BoolVar(p *bool, name, env string, def bool, usage string) {
	f.FlagSet.BoolVar(p, name, def, usage)
	f.Env(name, env)
}

// Float64Var defines a float64 flag set by variable env.
func (f *FlagSet) Float64Var(p *float64, name, env string, def float64, usage string) {
	f.FlagSet.Float64Var(p, name, def, usage)
	f.Env(name, env)
}

// DurationVar defines a duration flag set by variable env.
func (f *FlagSet) DurationVar(p *time.Duration, name, env string, def time.Duration, usage string) {
	f.FlagSet.DurationVar(p, name, def, usage)
	f.Env(name, env)
}

// Parse sets flags from their variables, then from args, and rejects
// positional arguments.
func (f *FlagSet) Parse(args []string) error {
	if err := parse(f.FlagSet, args, func(name string) string { return f.env[name] }); err != nil {
		return err
	}
	if f.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", f.Args())
	}
	return nil
}

// ParsePrefixed gives every flag of fs the variable prefix + its name in
// upper case with "-" as "_" ("xds-address" with prefix "ISTIOD_" is
// ISTIOD_XDS_ADDRESS), then parses as FlagSet.Parse does, except that
// positional arguments are left to the caller.
func ParsePrefixed(fs *flag.FlagSet, args []string, prefix string) error {
	return parse(fs, args, func(name string) string {
		return prefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	})
}

func parse(fs *flag.FlagSet, args []string, envOf func(string) string) error {
	var errs []error
	fs.VisitAll(func(fl *flag.Flag) {
		env := envOf(fl.Name)
		if env == "" {
			return
		}
		fl.Usage += " (env " + env + ")"
		v, ok := os.LookupEnv(env)
		if !ok {
			return
		}
		if err := fl.Value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", env, v, err))
		}
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	return errors.Join(errs...)
}
