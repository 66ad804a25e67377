package lab

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
)

// writeAligned prints header and rows as a table with aligned columns.
func writeAligned(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// writeIndentedJSON writes v for machines, indented for people.
func writeIndentedJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeReportFiles writes a report's text as dir/textName and v as
// dir/jsonName; errors name the report (what).
func writeReportFiles(dir, what, textName, text, jsonName string, v any) error {
	if err := os.WriteFile(filepath.Join(dir, textName), []byte(text), 0o644); err != nil {
		return fmt.Errorf("lab: %s: %w", what, err)
	}
	f, err := os.Create(filepath.Join(dir, jsonName))
	if err != nil {
		return fmt.Errorf("lab: %s: %w", what, err)
	}
	err = writeIndentedJSON(f, v)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("lab: %s: %w", what, err)
	}
	return nil
}
