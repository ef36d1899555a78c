package dmfpkg

import (
	"archive/zip"
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
)

// maxExcelPart bounds each XML part read from a workbook, and maxExcelCols
// the column index a cell reference may name.
const (
	maxExcelPart = 512 << 20
	maxExcelCols = 16384
)

// ReadExcel reads the first row of a worksheet as the header and the
// following rows as data. sheet names the worksheet (without regard to
// case); empty means the first one. It understands inline strings, shared
// strings, numbers and booleans, which covers what F&O exports; it does not
// evaluate formulas (it uses their cached values).
func ReadExcel(data []byte, sheet string) (*Table, error) {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("%w: not an .xlsx workbook: %w", ErrFormat, err)
	}
	files := map[string]*zip.File{}
	for _, f := range zr.File {
		files[strings.ToLower(strings.TrimPrefix(f.Name, "/"))] = f
	}
	var wb struct {
		Sheets []struct {
			Name string `xml:"name,attr"`
			RID  string `xml:"http://schemas.openxmlformats.org/officeDocument/2006/relationships id,attr"`
		} `xml:"sheets>sheet"`
	}
	if err := readXMLPart(files, "xl/workbook.xml", &wb); err != nil {
		return nil, err
	}
	if len(wb.Sheets) == 0 {
		return nil, fmt.Errorf("%w: the workbook has no worksheets", ErrFormat)
	}
	idx := 0
	if sheet != "" {
		idx = -1
		for i, s := range wb.Sheets {
			if strings.EqualFold(s.Name, sheet) {
				idx = i
			}
		}
		if idx < 0 {
			return nil, fmt.Errorf("%w: worksheet %q not found", ErrFormat, sheet)
		}
	}
	var rels struct {
		Rels []struct {
			ID     string `xml:"Id,attr"`
			Target string `xml:"Target,attr"`
		} `xml:"Relationship"`
	}
	if err := readXMLPart(files, "xl/_rels/workbook.xml.rels", &rels); err != nil {
		return nil, err
	}
	target := ""
	for _, r := range rels.Rels {
		if r.ID == wb.Sheets[idx].RID {
			target = r.Target
		}
	}
	if target == "" {
		return nil, fmt.Errorf("%w: worksheet %q has no part", ErrFormat, wb.Sheets[idx].Name)
	}
	if strings.HasPrefix(target, "/") {
		target = strings.TrimPrefix(target, "/")
	} else {
		target = path.Join("xl", target)
	}
	var shared []string
	if _, ok := files["xl/sharedstrings.xml"]; ok {
		var sst struct {
			SI []struct {
				T string `xml:"t"`
				R []struct {
					T string `xml:"t"`
				} `xml:"r"`
			} `xml:"si"`
		}
		if err := readXMLPart(files, "xl/sharedStrings.xml", &sst); err != nil {
			return nil, err
		}
		for _, si := range sst.SI {
			s := si.T
			for _, r := range si.R {
				s += r.T
			}
			shared = append(shared, s)
		}
	}
	return readSheet(files, target, shared)
}

func openPart(files map[string]*zip.File, name string) (io.ReadCloser, error) {
	f, ok := files[strings.ToLower(name)]
	if !ok {
		return nil, fmt.Errorf("%w: the workbook has no %s", ErrFormat, name)
	}
	if f.UncompressedSize64 > maxExcelPart {
		return nil, fmt.Errorf("%w: %s is too large", ErrTooLarge, name)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrFormat, name, err)
	}
	return rc, nil
}

func readXMLPart(files map[string]*zip.File, name string, v any) error {
	rc, err := openPart(files, name)
	if err != nil {
		return err
	}
	defer func() { _ = rc.Close() }()
	if err := xml.NewDecoder(io.LimitReader(rc, maxExcelPart)).Decode(v); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrFormat, name, err)
	}
	return nil
}

type xlsxCell struct {
	Ref  string `xml:"r,attr"`
	Type string `xml:"t,attr"`
	V    string `xml:"v"`
	IS   struct {
		T string `xml:"t"`
		R []struct {
			T string `xml:"t"`
		} `xml:"r"`
	} `xml:"is"`
}

type xlsxRow struct {
	R     int        `xml:"r,attr"`
	Cells []xlsxCell `xml:"c"`
}

func readSheet(files map[string]*zip.File, name string, shared []string) (*Table, error) {
	rc, err := openPart(files, name)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rc.Close() }()
	dec := xml.NewDecoder(io.LimitReader(rc, maxExcelPart))
	t := &Table{Format: FormatExcel}
	rowNum := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrFormat, name, err)
		}
		se, ok := tok.(xml.StartElement)
		if !ok || se.Name.Local != "row" {
			continue
		}
		var row xlsxRow
		if err := dec.DecodeElement(&row, &se); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrFormat, name, err)
		}
		rowNum++
		if row.R > 0 {
			rowNum = row.R
		}
		vals, err := rowValues(row, shared)
		if err != nil {
			return nil, fmt.Errorf("%w: %s row %d: %w", ErrFormat, name, rowNum, err)
		}
		if t.Header == nil {
			for i := range vals {
				vals[i] = strings.TrimSpace(vals[i])
			}
			t.Header = vals
			continue
		}
		empty := true
		for _, v := range vals {
			if v != "" {
				empty = false
			}
		}
		if !empty {
			t.Rows = append(t.Rows, Row{Line: rowNum, Values: vals})
		}
	}
	if t.Header == nil {
		return nil, fmt.Errorf("%w: the worksheet is empty", ErrFormat)
	}
	return t, nil
}

func rowValues(row xlsxRow, shared []string) ([]string, error) {
	var vals []string
	next := 0
	for _, c := range row.Cells {
		col := next
		if c.Ref != "" {
			n, err := columnIndex(c.Ref)
			if err != nil {
				return nil, err
			}
			col = n
		}
		if col >= maxExcelCols {
			return nil, fmt.Errorf("column %d out of range", col)
		}
		for len(vals) <= col {
			vals = append(vals, "")
		}
		var v string
		switch c.Type {
		case "inlineStr":
			v = c.IS.T
			for _, r := range c.IS.R {
				v += r.T
			}
		case "s":
			i, err := strconv.Atoi(strings.TrimSpace(c.V))
			if err != nil || i < 0 || i >= len(shared) {
				return nil, fmt.Errorf("cell %s refers to missing shared string %q", c.Ref, c.V)
			}
			v = shared[i]
		case "b":
			v = "No"
			if strings.TrimSpace(c.V) == "1" {
				v = "Yes"
			}
		default:
			v = c.V
		}
		vals[col] = v
		next = col + 1
	}
	return vals, nil
}

// columnIndex converts the letters of a cell reference such as "AB12" to a
// 0-based column index.
func columnIndex(ref string) (int, error) {
	n := 0
	i := 0
	for i < len(ref) && ref[i] >= 'A' && ref[i] <= 'Z' {
		n = n*26 + int(ref[i]-'A'+1)
		if n > maxExcelCols {
			return 0, fmt.Errorf("cell reference %q out of range", ref)
		}
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("invalid cell reference %q", ref)
	}
	return n - 1, nil
}
