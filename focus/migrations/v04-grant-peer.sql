-- v3 -> v4: the peered deployment whose relay serves a grant's holder ('' for this deployment's SFU)
ALTER TABLE focus_grant ADD COLUMN peer TEXT NOT NULL DEFAULT '';
