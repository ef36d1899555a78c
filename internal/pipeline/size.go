package pipeline

import "github.com/plantgate/plantgate/internal/config"

// ByteSize is a byte count in a plugin's settings, written as the gateway's
// own sizes are ("64MiB", "1GB", 1048576): plugins may not import the
// config package, so it reaches them through this type.
type ByteSize int64

// UnmarshalText parses a size with config.ParseSize.
func (s *ByteSize) UnmarshalText(b []byte) error {
	v, err := config.ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = ByteSize(v)
	return nil
}

// MarshalText writes the size as the config does.
func (s ByteSize) MarshalText() ([]byte, error) { return []byte(config.Size(s).String()), nil }
