package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/zuulimport"
)

func cmdImport(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "zuul" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			io.WriteString(stderr, "Usage: sortie import zuul PATH... [--project NAME] [--bootstrap JOB] [--playbook-var VAR] [--playbook-dir DIR]\n")
			return exitCode(0)
		}
		return usageError("import: say what to import from: sortie import zuul PATH...")
	}
	fs := newFlags("import zuul", "PATH... [--project NAME] [--bootstrap JOB] [--playbook-var VAR] [--playbook-dir DIR]", stderr)
	var opt zuulimport.Options
	fs.StringVar(&opt.Project, "project", "", "the project stanza to import (default: the only project of the input)")
	fs.StringVar(&opt.Bootstrap, "bootstrap", "", "the Zuul job that becomes the bootstrap job (default: the only job of the pipelines named *bootstrap*)")
	fs.StringVar(&opt.PlaybookVar, "playbook-var", "playbook_name", "the job variable that names a job's playbook")
	fs.StringVar(&opt.PlaybookDir, "playbook-dir", "playbooks", "the directory of the repository that variable is relative to")
	// Paths and flags may come in any order: zuul.d --project x.
	var paths []string
	rest := args[1:]
	for {
		if err := parseFlags(fs, rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		paths = append(paths, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(paths) == 0 {
		return usageError("import zuul: name the Zuul files or zuul.d/ directories to read")
	}
	res, err := zuulimport.Import(paths, opt)
	var ie *zuulimport.Error
	if errors.As(err, &ie) {
		return usageError("import zuul: %v", ie)
	}
	if err != nil {
		return err
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	if _, err := stdout.Write(res.Config); err != nil {
		return err
	}
	// What it writes must load; a config that does not is a bug of the
	// importer, said as such rather than left for validate to find.
	cfg, err := config.Parse("imported.yaml", res.Config)
	if err != nil {
		return fmt.Errorf("import zuul: the config written does not load (a bug of the importer, please report it):\n%w", err)
	}
	fmt.Fprintf(stderr, "sortie: imported %s and %s (%d made of project-stanza variants); %s\n",
		plural(len(cfg.Jobs), "job", "jobs"), plural(len(cfg.Pipelines), "pipeline", "pipelines"), len(res.Variants),
		plural(len(res.Warnings), "warning", "warnings"))
	return nil
}
