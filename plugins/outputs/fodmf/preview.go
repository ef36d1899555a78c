package fodmf

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"unicode/utf16"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// PreviewRequest implements pipeline.RequestPreviewer: the row r becomes
// in its entity's data file. It builds the package of r alone with Build,
// the code that builds the packages the sink imports, and reads the row
// back from it, so the cells are exactly those of the file F&O reads. In
// a batch the line field counts the lines of the batch; here r is line 1.
// A record the sink would dead-letter returns the same reason.
func (s *Layout) PreviewRequest(r pipeline.Record) (pipeline.RequestPreview, error) {
	i, err := s.entityOf(r)
	if err != nil {
		return pipeline.RequestPreview{}, err
	}
	var buf bytes.Buffer
	st, err := s.Build(&buf, os.TempDir(), []pipeline.Record{r})
	if err != nil {
		return pipeline.RequestPreview{}, err
	}
	file := st.Entities[i].File
	rows, err := readDataFile(buf.Bytes(), file)
	if err != nil {
		return pipeline.RequestPreview{}, fmt.Errorf("read back the data file %s: %w", file, err)
	}
	if len(rows) != 2 {
		return pipeline.RequestPreview{}, fmt.Errorf("read back the data file %s: %d rows, want a header and one row", file, len(rows))
	}
	e := s.ents[i]
	return pipeline.RequestPreview{
		File: file, Columns: rows[0], Row: rows[1],
		Note: fmt.Sprintf("a line of the data file %s (entity %q) in the DMF package the sink uploads and imports into data project %s once the batch closes (batch.max_records, max_bytes, max_age or schedule)",
			file, e.Name, s.cfg.DefinitionGroup),
	}, nil
}

// readDataFile returns the CSV rows of the data file name in the package
// pkg, decoded from UTF-16 when it starts with a UTF-16 byte order mark.
func readDataFile(pkg []byte, name string) ([][]string, error) {
	zr, err := zip.NewReader(bytes.NewReader(pkg), int64(len(pkg)))
	if err != nil {
		return nil, err
	}
	f, err := zr.Open(name)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	text := string(bytes.TrimPrefix(b, []byte{0xEF, 0xBB, 0xBF}))
	if bytes.HasPrefix(b, []byte{0xFF, 0xFE}) {
		u := make([]uint16, (len(b)-2)/2)
		for j := range u {
			u[j] = binary.LittleEndian.Uint16(b[2+2*j:])
		}
		text = string(utf16.Decode(u))
	}
	cr := csv.NewReader(bytes.NewReader([]byte(text)))
	cr.FieldsPerRecord = -1
	return cr.ReadAll()
}

var _ pipeline.RequestPreviewer = (*Sink)(nil)
