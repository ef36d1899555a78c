// Package logging builds plantgate's zerolog loggers: JSON lines on stdout for
// journald, a console writer on a terminal, child loggers per component, field
// names as constants (fields.go) and redaction of secrets.
//
// Components never use the global zerolog logger; they receive a child logger
// through pipeline.Env or their constructor.
package logging
