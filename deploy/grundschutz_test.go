package deploy

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// knownGrundschutzIDs reads testdata/grundschutz-ids.tsv: ID → title.
func knownGrundschutzIDs(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("testdata/grundschutz-ids.tsv")
	require.NoError(t, err)
	defer f.Close()
	ids := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, title, ok := strings.Cut(line, "\t")
		require.True(t, ok, "line %q: ID<TAB>title", line)
		ids[id] = title
	}
	require.NoError(t, sc.Err())
	return ids
}

var (
	// grundschutzID is a requirement ID of the modules the table may cite.
	grundschutzID = regexp.MustCompile(`^(APP\.4\.4|APP\.5\.4|SYS\.1\.6|NET\.\d+(\.\d+)*|CON\.\d+|OPS\.\d+(\.\d+)*|ORP\.\d+)\.A\d+$`)
	backticked    = regexp.MustCompile("`([^`]+)`")
)

// checkGrundschutzTable returns the problems of the table in doc (named
// name): IDs that are not Kompendium IDs of the cited modules or carry
// another title, rows without evidence, evidence files (relative to root)
// that do not exist, tests (file:TestName) their file does not declare.
func checkGrundschutzTable(known map[string]string, name, doc, root string) (rows int, problems []string) {
	var header []string
	for n, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(line, "|") {
			header = nil
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		where := fmt.Sprintf("%s:%d", name, n+1)
		if header == nil {
			header = cells
			if strings.Join(header, "|") != "ID|requirement|how|evidence|status" {
				problems = append(problems, where+": columns must be ID | requirement | how | evidence | status")
			}
			continue
		}
		if strings.HasPrefix(line, "|---") {
			continue
		}
		if len(cells) != 5 {
			problems = append(problems, fmt.Sprintf("%s: %d cells", where, len(cells)))
			continue
		}
		rows++
		var titles []string
		for _, id := range strings.Split(cells[0], ", ") {
			if !grundschutzID.MatchString(id) {
				problems = append(problems, fmt.Sprintf("%s: %q is not a requirement ID of the cited modules", where, id))
				continue
			}
			title, ok := known[id]
			if !ok {
				problems = append(problems, fmt.Sprintf("%s: %s is not a known Kompendium ID (testdata/grundschutz-ids.tsv)", where, id))
				continue
			}
			titles = append(titles, title)
		}
		if want := strings.Join(titles, "; "); len(titles) > 0 && cells[1] != want {
			problems = append(problems, fmt.Sprintf("%s: title %q, the Kompendium's is %q", where, cells[1], want))
		}
		ev := backticked.FindAllStringSubmatch(cells[3], -1)
		if len(ev) == 0 {
			problems = append(problems, where+": no evidence named")
		}
		for _, m := range ev {
			path, test, isTest := strings.Cut(m[1], ":")
			full := filepath.Join(root, path)
			if _, err := os.Stat(full); err != nil {
				problems = append(problems, fmt.Sprintf("%s: evidence %s does not exist", where, path))
				continue
			}
			if isTest {
				src, err := os.ReadFile(full)
				if err != nil || !regexp.MustCompile(`(?m)^func `+regexp.QuoteMeta(test)+`\(t \*testing\.T\)`).Match(src) {
					problems = append(problems, fmt.Sprintf("%s: %s declares no test %s", where, path, test))
				}
			}
		}
		if cells[4] == "" {
			problems = append(problems, where+": no status")
		}
	}
	return rows, problems
}

// TestGrundschutzTable checks docs/operations/grundschutz.md: every row
// cites Kompendium requirement IDs with their titles and names evidence
// (files, directories, file:TestName) that exists in the repository.
func TestGrundschutzTable(t *testing.T) {
	known := knownGrundschutzIDs(t)
	raw, err := os.ReadFile("../docs/operations/grundschutz.md")
	require.NoError(t, err)
	rows, problems := checkGrundschutzTable(known, "grundschutz.md", string(raw), "..")
	require.Empty(t, problems)
	require.GreaterOrEqual(t, rows, 20, "the table was not found or lost rows")
}

// TestGrundschutzTableCheck: the check refuses what it should.
func TestGrundschutzTableCheck(t *testing.T) {
	known := knownGrundschutzIDs(t)
	doc := "| ID | requirement | how | evidence | status |\n|---|---|---|---|---|\n" +
		"| APP.4.4.A99 | Erfunden | x | `deploy/check.sh` | met |\n" +
		"| APP.4.4.A21 | Regelmäßiger Austausch von Pods | x | `deploy/check.sh` | met |\n" +
		"| SYS.1.6.A8 | Sichere Speicherung von Zugangsdaten bei Containern | x | `deploy/nope.go` | met |\n" +
		"| SYS.1.6.A15 | Limitierung der Ressourcen pro Container | x | `deploy/manifests_test.go:TestNope` | met |\n" +
		"| CON.1.A4 | Geeignetes Schlüsselmanagement | x | nothing | met |\n" +
		"| ISMS.1.A1 | Übernahme der Gesamtverantwortung | x | `deploy/check.sh` | met |\n"
	rows, problems := checkGrundschutzTable(known, "t.md", doc, "..")
	require.Equal(t, 6, rows)
	all := strings.Join(problems, "\n")
	for _, want := range []string{
		"t.md:3: APP.4.4.A99 is not a known Kompendium ID",
		`t.md:4: title "Regelmäßiger Austausch von Pods", the Kompendium's is "Regelmäßiger Restart von Pods"`,
		"t.md:5: evidence deploy/nope.go does not exist",
		"t.md:6: deploy/manifests_test.go declares no test TestNope",
		"t.md:7: no evidence named",
		`t.md:8: "ISMS.1.A1" is not a requirement ID of the cited modules`,
	} {
		require.Contains(t, all, want)
	}
}
