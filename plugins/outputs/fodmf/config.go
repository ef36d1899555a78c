package fodmf

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/plantgate/plantgate/internal/d365/dmfpackage"
	"github.com/plantgate/plantgate/internal/pipeline"
)

// On-failure policies of an import F&O answered Failed.
const (
	OnFailedDeadLetter = "dead_letter"
	OnFailedRetry      = "retry"
)

// Config is the sink's settings.
type Config struct {
	// Env names the F&O environment (a key of the fo: section).
	Env string `yaml:"env" required:"true" ref:"fo"`
	// DefinitionGroup is the data project (definition group) the packages
	// are imported into; it must exist in F&O with these entities.
	DefinitionGroup string `yaml:"definition_group" required:"true"`
	// LegalEntity is the company imported into; default: the environment's.
	LegalEntity string `yaml:"legal_entity"`
	// Entity, SourceFormat, Columns and LineField describe the one entity
	// of a single-entity sink; Entities lists several (one data file each,
	// imported in this order).
	Entity       string   `yaml:"entity"`
	TargetEntity string   `yaml:"target_entity"`
	SourceFormat string   `yaml:"source_format" default:"CSV-Unicode" enum:"CSV-Unicode,CSV"`
	Columns      []string `yaml:"columns"`
	LineField    string   `yaml:"line_field"`
	Entities     []Entity `yaml:"entities"`
	// EntityField is the record field naming a record's entity (its label)
	// in a sink with several entities; it is not a column.
	EntityField string `yaml:"entity_field" default:"_entity"`
	// ManifestTemplate is a Manifest.xml exported from the customer's own
	// data project, used instead of the generated one (entity labels differ
	// per environment and language).
	ManifestTemplate string `yaml:"manifest_template" file:"read"`
	// Batch says when a batch of records closes into a package.
	Batch Batch `yaml:"batch"`
	// MaxPackageBytes splits a batch whose package would be larger.
	MaxPackageBytes pipeline.ByteSize `yaml:"max_package_bytes" default:"256MiB"`
	// PollInitial and PollMax bound the wait between status polls.
	PollInitial time.Duration `yaml:"poll_initial" default:"5s" min:"10ms"`
	PollMax     time.Duration `yaml:"poll_max" default:"1m" min:"10ms"`
	// ImportDeadline: an import still NotRun or Executing this long after
	// it was requested is reported stalled (status, metric, log) and held:
	// polled on, never imported again.
	ImportDeadline time.Duration `yaml:"import_deadline" default:"2h" min:"1s"`
	// NotFoundGrace is how long F&O may answer "were not found" for an
	// execution plantgate requested before the request counts as never
	// received, and the package is imported again under the same
	// executionId.
	NotFoundGrace time.Duration `yaml:"not_found_grace" default:"5m" min:"10ms"`
	// OnFailed is what happens to a batch F&O imported with status Failed:
	// dead_letter (every line, with F&O's errors) or retry (import again,
	// up to MaxAttempts, then dead-letter).
	OnFailed    string `yaml:"on_failed" default:"dead_letter" enum:"dead_letter,retry"`
	MaxAttempts int    `yaml:"max_attempts" default:"3" min:"1"`
	// Overwrite is ImportFromPackage's overwrite (false for a package with
	// a composite entity).
	Overwrite bool `yaml:"overwrite" default:"true"`
}

// Entity is one entity of a multi-entity sink.
type Entity struct {
	// Name is the DMF entity label, e.g. "Production order picking list
	// journal lines".
	Name         string   `yaml:"name" required:"true"`
	TargetEntity string   `yaml:"target_entity"`
	File         string   `yaml:"file"`
	SourceFormat string   `yaml:"source_format" enum:"CSV-Unicode,CSV"`
	Columns      []string `yaml:"columns" required:"true"`
	// LineField is a column plantgate fills with the line's number in the
	// data file (the entity's line number key, such as JOURNALLINENUMBER),
	// so F&O's error files name each failed line exactly.
	LineField string `yaml:"line_field"`
}

// Batch says when a batch closes: at MaxRecords or MaxBytes, when its
// oldest record is MaxAge old, or at the times of Schedule (a cron
// expression in TimeZone), whichever comes first, and only while F&O is
// reachable.
type Batch struct {
	MaxRecords int               `yaml:"max_records" default:"50000" min:"1"`
	MaxBytes   pipeline.ByteSize `yaml:"max_bytes" default:"64MiB"`
	MaxAge     time.Duration     `yaml:"max_age" default:"15m" min:"0s"`
	// Schedule is a five-field cron expression, e.g. "0 6,14,22 * * *"
	// (end of shift); empty: none.
	Schedule string `yaml:"schedule"`
	// TimeZone of Schedule, e.g. Europe/Berlin; default the machine's.
	TimeZone string `yaml:"time_zone"`
}

// entities returns the configured entities (the single-entity keys as one).
func (c *Config) entities() []Entity {
	if len(c.Entities) > 0 {
		out := make([]Entity, len(c.Entities))
		for i, e := range c.Entities {
			if e.SourceFormat == "" {
				e.SourceFormat = c.SourceFormat
			}
			out[i] = e
		}
		return out
	}
	if c.Entity == "" {
		return nil
	}
	return []Entity{{Name: c.Entity, TargetEntity: c.TargetEntity, SourceFormat: c.SourceFormat, Columns: c.Columns, LineField: c.LineField}}
}

// Spec returns the package layout of the sink.
func (c *Config) Spec() (dmfpackage.Spec, error) {
	spec := dmfpackage.Spec{DefinitionGroup: c.DefinitionGroup, Description: c.DefinitionGroup}
	for _, e := range c.entities() {
		spec.Entities = append(spec.Entities, dmfpackage.Entity{Label: e.Name, TargetEntity: e.TargetEntity, File: e.File,
			Format: e.SourceFormat, Columns: e.Columns})
	}
	if c.ManifestTemplate != "" {
		b, err := os.ReadFile(c.ManifestTemplate)
		if err != nil {
			return spec, fmt.Errorf("manifest_template: %w", err)
		}
		spec.ManifestTemplate = b
	}
	return spec, nil
}

// schedule parses Batch.Schedule in its time zone (nil when none).
func (c *Config) schedule() (cron.Schedule, error) {
	if strings.TrimSpace(c.Batch.Schedule) == "" {
		return nil, nil
	}
	loc := time.Local
	if c.Batch.TimeZone != "" {
		l, err := time.LoadLocation(c.Batch.TimeZone)
		if err != nil {
			return nil, fmt.Errorf("batch.time_zone %q: %w", c.Batch.TimeZone, err)
		}
		loc = l
	}
	s, err := cron.ParseStandard(c.Batch.Schedule)
	if err != nil {
		return nil, fmt.Errorf("batch.schedule %q: %w (want five cron fields: minute hour day-of-month month day-of-week)", c.Batch.Schedule, err)
	}
	if sp, ok := s.(*cron.SpecSchedule); ok {
		sp.Location = loc
	}
	return s, nil
}

// Validate checks the settings on their own.
func (c *Config) Validate() error {
	var errs []error
	ents := c.entities()
	switch {
	case len(ents) == 0:
		errs = append(errs, errors.New("no entity: set entity and columns, or entities"))
	case len(c.Entities) > 0 && (c.Entity != "" || len(c.Columns) > 0):
		errs = append(errs, errors.New("set either entity/columns or entities, not both"))
	}
	for i, e := range ents {
		if len(e.Columns) == 0 {
			errs = append(errs, fmt.Errorf("entity %q: columns: list the data file's columns (the entity's staging field names)", e.Name))
		}
		if e.LineField != "" && !contains(e.Columns, e.LineField) {
			errs = append(errs, fmt.Errorf("entity %q: line_field %s is not one of its columns", e.Name, e.LineField))
		}
		for _, o := range ents[:i] {
			if strings.EqualFold(o.Name, e.Name) {
				errs = append(errs, fmt.Errorf("entity %q is listed twice", e.Name))
			}
		}
	}
	if _, err := c.schedule(); err != nil {
		errs = append(errs, err)
	}
	if c.PollMax < c.PollInitial {
		errs = append(errs, fmt.Errorf("poll_max %s is shorter than poll_initial %s", c.PollMax, c.PollInitial))
	}
	if len(errs) == 0 {
		spec, err := c.Spec()
		if err != nil {
			errs = append(errs, err)
		} else if err := spec.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
