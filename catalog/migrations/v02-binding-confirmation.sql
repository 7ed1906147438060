-- v1 -> v2: a binding counts once the room confirmed it (a room admin, or the meetings scheduler that created the room)
ALTER TABLE catalog_binding ADD COLUMN confirmed_by TEXT NOT NULL DEFAULT '';
