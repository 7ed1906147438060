package plan

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"

	"github.com/stretchr/testify/require"
)

// The concept (docs/concept) backs its claims by links to tests and README
// sections of this repository, so a moved file or renamed heading must
// fail the build. This test lives here because the planner's figures are
// what the concept quotes; it checks docs/operations and README.md too.

var (
	mdLink     = regexp.MustCompile(`!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	mdRefDef   = regexp.MustCompile(`^\s{0,3}\[[^\]]+\]:\s+(\S+)`)
	codeSpan   = regexp.MustCompile("`[^`]*`")
	htmlAnchor = regexp.MustCompile(`<a\s+(?:name|id)="([^"]+)"`)
)

// anchors returns the GitHub heading anchors (and <a id> anchors) of a
// Markdown file.
func anchors(path string) (map[string]bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	count := map[string]int{}
	inFence := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inFence = !inFence
			continue
		}
		if inFence {
			continue
		}
		for _, m := range htmlAnchor.FindAllStringSubmatch(line, -1) {
			out[m[1]] = true
		}
		if !strings.HasPrefix(line, "#") {
			continue
		}
		slug := slugify(strings.TrimSpace(strings.TrimLeft(line, "#")))
		if n := count[slug]; n > 0 {
			out[fmt.Sprintf("%s-%d", slug, n)] = true
		} else {
			out[slug] = true
		}
		count[slug]++
	}
	return out, nil
}

// slugify is GitHub's heading anchor: lower case, letters, digits, "-"
// and "_" kept, spaces to "-", everything else dropped.
func slugify(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// checkLinks returns every relative link of the files (outside code) that
// does not resolve to a file or directory inside root, or to a heading of
// the Markdown file it names; and how many links it checked.
func checkLinks(root string, files []string) (problems []string, checked int) {
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		rel, _ := filepath.Rel(root, f)
		inFence := false
		for i, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "```") {
				inFence = !inFence
				continue
			}
			if inFence {
				continue
			}
			line = codeSpan.ReplaceAllString(line, "")
			var targets []string
			for _, m := range mdLink.FindAllStringSubmatch(line, -1) {
				targets = append(targets, m[1])
			}
			if m := mdRefDef.FindStringSubmatch(line); m != nil {
				targets = append(targets, m[1])
			}
			for _, target := range targets {
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				checked++
				where := fmt.Sprintf("%s:%d: %s", rel, i+1, target)
				path, frag, _ := strings.Cut(target, "#")
				dest := f
				if path != "" {
					dest = filepath.Clean(filepath.Join(filepath.Dir(f), path))
					if !strings.HasPrefix(dest, root+string(filepath.Separator)) {
						problems = append(problems, where+": leaves the repository")
						continue
					}
					if _, err := os.Stat(dest); err != nil {
						problems = append(problems, where+": no such file")
						continue
					}
				}
				if frag != "" && strings.HasSuffix(dest, ".md") {
					a, err := anchors(dest)
					if err != nil || !a[frag] {
						problems = append(problems, where+": no heading with this anchor")
					}
				}
			}
		}
	}
	return problems, checked
}

func TestDocsRelativeLinksResolve(t *testing.T) {
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	var files []string
	for _, dir := range []string{"docs/concept", "docs/operations"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasSuffix(p, ".md") {
				files = append(files, p)
			}
			return err
		})
		require.NoError(t, err, dir)
	}
	files = append(files, filepath.Join(root, "README.md"))
	problems, checked := checkLinks(root, files)
	require.Empty(t, problems)
	require.Greater(t, checked, 10)
	t.Logf("%d relative links in %d files resolve", checked, len(files))
}

func TestCheckLinksFindsBrokenOnes(t *testing.T) {
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "docs"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "README.md"), []byte("# Title\n## Capacity (`plan`)\n"), 0o600))
	doc := "# Doc\n" +
		"[ok](../README.md#capacity-plan) [self](#doc) [web](https://example.org/x) `[code](nope.md)`\n" +
		"```\n[fenced](nope.md)\n```\n" +
		"[gone](missing.md) [anchor](../README.md#nothing) [out](../../etc/passwd)\n" +
		"[ref]: gone-too.md\n"
	p := filepath.Join(root, "docs", "a.md")
	require.NoError(t, os.WriteFile(p, []byte(doc), 0o600))
	problems, checked := checkLinks(root, []string{p})
	require.Equal(t, 6, checked)
	require.Len(t, problems, 4, "%v", problems)
	require.Contains(t, problems[0], "docs/a.md:6: missing.md: no such file")
	require.Contains(t, problems[1], "../README.md#nothing: no heading")
	require.Contains(t, problems[2], "leaves the repository")
	require.Contains(t, problems[3], "gone-too.md: no such file")
}

func TestSlugify(t *testing.T) {
	require.Equal(t, "kapazität-und-kosten-gxconf-plan", slugify("Kapazität und Kosten (`gxconf plan`)"))
	require.Equal(t, "2-swot-vergleich", slugify("2. SWOT-Vergleich"))
	require.Equal(t, "several-nodes-and-sites-cluster", slugify("Several nodes and sites (cluster)"))
}
