-- Groups and their membership. Membership is relational, one row per (group, member), indexed
-- both ways, so adding or removing members costs the members named, never the group's size.

CREATE TABLE groups (
    id                  TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    directory_id        TEXT NOT NULL REFERENCES directories(id) ON DELETE CASCADE,
    display_name        TEXT NOT NULL,
    -- scim::index::fold of display_name: unique per directory, compared case-insensitively.
    display_name_folded TEXT COLLATE "C" NOT NULL,
    external_id         TEXT COLLATE "C",
    -- The stored resource (canonical SCIM JSON without id, meta and members).
    data                TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    modified_at         BIGINT NOT NULL,
    version             BIGINT NOT NULL
);
CREATE UNIQUE INDEX groups_directory_display_name ON groups (directory_id, display_name_folded);
CREATE INDEX groups_directory_id ON groups (directory_id, id);
CREATE INDEX groups_directory_external_id ON groups (directory_id, external_id);
CREATE INDEX groups_directory_modified ON groups (directory_id, modified_at);
CREATE INDEX groups_directory_created ON groups (directory_id, created_at);

-- Members are users of the same directory. Deleting either side removes the row.
CREATE TABLE group_members (
    directory_id TEXT NOT NULL,
    group_id     TEXT COLLATE "C" NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    user_id      TEXT COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members (user_id, group_id);
CREATE INDEX group_members_directory_user ON group_members (directory_id, user_id);
