package atrest

import (
	"bytes"
	"context"
	"fmt"

	"go.mau.fi/util/dbutil"
)

// Column is an encrypted column: Table.Value, whose rows are keyed by the
// text column ID; the ID's value is the associated data of the sealed value
// (as credentials seals attestation claims under the attestation id).
// Table and column names come from code, never from input.
type Column struct {
	Table, ID, Value string
}

func (c Column) String() string { return c.Table + "." + c.Value }

// batch is how many rows Rotate reads at a time.
const batch = 100

// Progress is called after each row Rotate re-encrypted, with the count so far.
type Progress func(rotated int)

// Rotate re-encrypts every value of col that is not sealed with the
// primary key. Each row is its own update and only happens if the row still
// holds the value that was read (a concurrent writer wins), so an
// interrupted rotation leaves every row sealed either with its old key or
// with the primary, both readable while the old key is configured. A value
// that does not open stops the rotation with an error naming the row; it is
// left as it is. It returns how many rows it re-encrypted.
func Rotate(ctx context.Context, db *dbutil.Database, k *Keyring, col Column, progress Progress) (int, error) {
	rotated := 0
	after := ""
	for {
		ids, vals, err := page(ctx, db, col, after)
		if err != nil {
			return rotated, err
		}
		if len(ids) == 0 {
			return rotated, nil
		}
		for i, id := range ids {
			after = id
			if KeyID(vals[i]) == k.Primary() {
				continue
			}
			if err := ctx.Err(); err != nil {
				return rotated, err
			}
			plain, err := k.Open(vals[i], []byte(id))
			if err != nil {
				return rotated, fmt.Errorf("%s row %s: %w", col, id, err)
			}
			sealed, err := k.Seal(plain, []byte(id))
			if err != nil {
				return rotated, err
			}
			res, err := db.Exec(ctx, fmt.Sprintf("UPDATE %s SET %s = $1 WHERE %s = $2 AND %s = $3", col.Table, col.Value, col.ID, col.Value), sealed, id, vals[i])
			if err != nil {
				return rotated, fmt.Errorf("%s row %s: failed to write: %w", col, id, err)
			}
			if n, _ := res.RowsAffected(); n == 1 {
				rotated++
				if progress != nil {
					progress(rotated)
				}
			}
		}
	}
}

func page(ctx context.Context, db *dbutil.Database, col Column, after string) (ids []string, vals [][]byte, err error) {
	rows, err := db.Query(ctx, fmt.Sprintf("SELECT %s, %s FROM %s WHERE %s > $1 ORDER BY %s LIMIT %d", col.ID, col.Value, col.Table, col.ID, col.ID, batch), after)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to read %s: %w", col, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id string
			v  []byte
		)
		if err := rows.Scan(&id, &v); err != nil {
			return nil, nil, fmt.Errorf("failed to read %s: %w", col, err)
		}
		ids, vals = append(ids, id), append(vals, bytes.Clone(v))
	}
	return ids, vals, rows.Err()
}

// KeyUse counts the rows of col by the id of the key that sealed them.
func KeyUse(ctx context.Context, db *dbutil.Database, col Column) (map[string]int, error) {
	use := map[string]int{}
	after := ""
	for {
		ids, vals, err := page(ctx, db, col, after)
		if err != nil {
			return nil, err
		}
		if len(ids) == 0 {
			return use, nil
		}
		for i := range ids {
			use[KeyID(vals[i])]++
		}
		after = ids[len(ids)-1]
	}
}

// Check opens one value per key id in use in col: it fails with an error
// naming the key id if a key is missing or is not the key the values were
// sealed with, before anything relies on reading them.
func Check(ctx context.Context, db *dbutil.Database, k *Keyring, col Column) error {
	tried := map[string]bool{}
	after := ""
	for {
		ids, vals, err := page(ctx, db, col, after)
		if err != nil {
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		for i, id := range ids {
			kid := KeyID(vals[i])
			if tried[kid] {
				continue
			}
			tried[kid] = true
			if _, err := k.Open(vals[i], []byte(id)); err != nil {
				return fmt.Errorf("%s row %s: %w", col, id, err)
			}
		}
		after = ids[len(ids)-1]
	}
}
