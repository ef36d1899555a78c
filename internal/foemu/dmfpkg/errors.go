package dmfpkg

import "errors"

// ErrNotZip reports package bytes that are not a readable zip archive.
var ErrNotZip = errors.New("the package is not a valid zip file")

// ErrMissingFile reports a file the package or its manifest needs but the
// zip lacks.
var ErrMissingFile = errors.New("file not found in package")

// ErrManifest reports a Manifest.xml or PackageHeader.xml that cannot be
// read: bad encoding, bad XML, wrong root element or namespace.
var ErrManifest = errors.New("invalid package manifest")

// ErrNotUnicode reports a CSV-Unicode data file that is not UTF-16 LE with
// a byte order mark. F&O answers "Selected file is not Unicode".
var ErrNotUnicode = errors.New("selected file is not Unicode")

// ErrLineEnding reports a CSV-Unicode data file with line ends other than
// CRLF.
var ErrLineEnding = errors.New("line ends are not CRLF")

// ErrFormat reports a data file that cannot be parsed in its declared
// source format (broken quoting, unreadable workbook).
var ErrFormat = errors.New("malformed data file")

// ErrUnsupportedFormat reports a SourceFormat the reader does not know.
var ErrUnsupportedFormat = errors.New("unsupported source data format")

// ErrTooLarge reports a file in the package larger than the configured
// limit.
var ErrTooLarge = errors.New("file in package is too large")
