-- A downstream service database modeled on the platform before FK removal: several
-- services' schemas in one database whose tables still hold foreign keys into its
-- own copy of public.users (a replicated users table, the old FK target), with
-- NOT NULL + NO ACTION keys, CASCADE chains between service tables, soft-delete
-- (deleted_at) tables, a legacy boolean-delete table, a per-service copy of a
-- schema (messaging_eu), and a table the auth side owns (public.api_keys).

CREATE TABLE public.users (
    id       uuid PRIMARY KEY,
    region   text NOT NULL DEFAULT 'eu',
    username text NOT NULL,
    CONSTRAINT users_id_region_key UNIQUE (id, region)
);

CREATE TABLE public.api_keys (
    id       bigint PRIMARY KEY,
    owner_id uuid NOT NULL
);
CREATE INDEX api_keys_owner_id_idx ON public.api_keys (owner_id);
-- Added NOT VALID and never validated: must come back exactly like that.
ALTER TABLE public.api_keys ADD CONSTRAINT api_keys_owner_id_fkey
    FOREIGN KEY (owner_id) REFERENCES public.users (id) NOT VALID;

-- messaging ------------------------------------------------------------------
CREATE SCHEMA messaging;
CREATE TABLE messaging.conversations (
    id         bigint PRIMARY KEY,
    created_by uuid REFERENCES public.users ON DELETE SET NULL,      -- unindexed
    title      text
);
CREATE TABLE messaging.conversation_participants (
    conversation_id bigint NOT NULL REFERENCES messaging.conversations ON DELETE CASCADE,
    user_id         uuid NOT NULL REFERENCES public.users ON DELETE CASCADE,
    PRIMARY KEY (user_id, conversation_id)                           -- covers user_id
);
CREATE TABLE messaging.messages (
    id              bigint PRIMARY KEY,
    conversation_id bigint NOT NULL REFERENCES messaging.conversations ON DELETE CASCADE,
    sender_id       uuid NOT NULL
        CONSTRAINT messages_sender_fk REFERENCES public.users ON DELETE RESTRICT ON UPDATE CASCADE,
    body            text,
    deleted_at      timestamptz                                      -- soft delete
);
-- A partial index does not cover the foreign key.
CREATE INDEX messages_sender_partial_idx ON messaging.messages (sender_id) WHERE body IS NOT NULL;

-- content --------------------------------------------------------------------
CREATE SCHEMA content;
CREATE TABLE content.posts (
    id         bigint PRIMARY KEY,
    author_id  uuid NOT NULL REFERENCES public.users ON DELETE CASCADE,
    body       text,
    deleted_at timestamptz                                           -- soft delete
);
CREATE INDEX posts_author_id_id_idx ON content.posts (author_id, id);
CREATE TABLE content.stories (
    id        bigint PRIMARY KEY,
    author_id uuid NOT NULL
        REFERENCES public.users ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX stories_author_id_idx ON content.stories (author_id);
CREATE TABLE content.story_views (
    story_id  bigint REFERENCES content.stories ON DELETE CASCADE,
    viewer_id uuid REFERENCES public.users ON DELETE NO ACTION DEFERRABLE,
    PRIMARY KEY (story_id, viewer_id)                                -- viewer_id not leading
);
CREATE TABLE content.story_close_friends (
    owner_id  uuid REFERENCES public.users ON DELETE CASCADE,
    friend_id uuid REFERENCES public.users ON DELETE CASCADE,
    PRIMARY KEY (owner_id, friend_id)
);
CREATE TABLE content.post_shares (
    id               bigint PRIMARY KEY,
    post_id          bigint REFERENCES content.posts ON DELETE CASCADE,
    shared_by_region text,
    shared_by        uuid,
    -- Composite, referenced columns in a different order than the unique key,
    -- SET NULL of one column only (PostgreSQL 15+).
    CONSTRAINT post_shares_sharer_fkey FOREIGN KEY (shared_by_region, shared_by)
        REFERENCES public.users (region, id) ON DELETE SET NULL (shared_by)
);
CREATE INDEX post_shares_sharer_idx ON content.post_shares (shared_by, shared_by_region);
-- A legacy boolean delete flag, NOT NULL + NO ACTION, and a CASCADE from posts.
CREATE TABLE content.comments (
    id         bigint PRIMARY KEY,
    post_id    bigint NOT NULL REFERENCES content.posts ON DELETE CASCADE,
    author_id  uuid NOT NULL REFERENCES public.users,                -- NO ACTION
    is_deleted boolean NOT NULL DEFAULT false
);
CREATE INDEX comments_author_id_idx ON content.comments (author_id);
CREATE INDEX comments_post_id_idx ON content.comments (post_id);
CREATE TABLE content.bookmark_collections (
    id       bigint PRIMARY KEY,
    owner_id uuid NOT NULL REFERENCES public.users ON DELETE CASCADE,
    CONSTRAINT bookmark_collections_owner_id_id_key UNIQUE (owner_id, id)
);
CREATE TABLE content.bookmarks (
    id            bigint PRIMARY KEY,
    collection_id bigint REFERENCES content.bookmark_collections ON DELETE CASCADE,
    user_id       uuid REFERENCES public.users ON DELETE SET DEFAULT      -- unindexed
);

-- streaming ------------------------------------------------------------------
CREATE SCHEMA streaming;
CREATE TABLE streaming.streams (
    id             bigint PRIMARY KEY,
    broadcaster_id uuid NOT NULL REFERENCES public.users ON DELETE CASCADE
) WITH (autovacuum_enabled = off);                                  -- never analyzed
CREATE TABLE streaming.viewer_sessions (
    id        bigint PRIMARY KEY,
    stream_id bigint REFERENCES streaming.streams ON DELETE CASCADE,
    viewer_id uuid NOT NULL DEFAULT '00000000-0000-4000-8000-000000000000'
        REFERENCES public.users ON DELETE SET DEFAULT ON UPDATE RESTRICT
);
CREATE INDEX viewer_sessions_viewer_id_idx ON streaming.viewer_sessions (viewer_id);

-- experiments, with a second table merely named users ------------------------
CREATE SCHEMA experiments;
CREATE TABLE experiments.users (
    id     uuid PRIMARY KEY,
    cohort text
);
CREATE TABLE experiments.experiments (
    id         bigint PRIMARY KEY,
    created_by uuid REFERENCES public.users ON DELETE SET NULL,      -- unindexed
    owner_id   uuid REFERENCES experiments.users ON DELETE CASCADE
);
CREATE TABLE experiments.experiment_assignments (
    experiment_id bigint REFERENCES experiments.experiments ON DELETE CASCADE,
    user_id       uuid NOT NULL REFERENCES public.users ON DELETE CASCADE,
    subject_id    uuid REFERENCES experiments.users ON DELETE CASCADE,
    PRIMARY KEY (experiment_id, user_id)
);
-- Partitioned: every partition holds a child copy of the constraint.
CREATE TABLE experiments.experiment_events (
    id          bigint NOT NULL,
    occurred_at date NOT NULL,
    user_id     uuid,
    user_region text,
    CONSTRAINT experiment_events_user_fkey FOREIGN KEY (user_id, user_region)
        REFERENCES public.users (id, region) MATCH FULL ON DELETE CASCADE
) PARTITION BY RANGE (occurred_at);
CREATE TABLE experiments.experiment_events_2026 PARTITION OF experiments.experiment_events
    FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE experiments.experiment_events_2027 PARTITION OF experiments.experiment_events
    FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');

-- the messaging service's copy of its schema for a second region -------------
CREATE SCHEMA messaging_eu;
CREATE TABLE messaging_eu.conversations (
    id         bigint PRIMARY KEY,
    created_by uuid NOT NULL REFERENCES public.users,                -- NO ACTION
    title      text
);
CREATE INDEX conversations_created_by_idx ON messaging_eu.conversations (created_by);
CREATE TABLE messaging_eu.messages (
    id              bigint PRIMARY KEY,
    conversation_id bigint NOT NULL REFERENCES messaging_eu.conversations ON DELETE CASCADE,
    sender_id       uuid NOT NULL REFERENCES public.users,           -- NO ACTION
    body            text,
    deleted_at      timestamptz
);
CREATE INDEX messages_sender_id_idx ON messaging_eu.messages (sender_id);

-- identifiers that need quoting ----------------------------------------------
CREATE SCHEMA "Audit Log";
CREATE TABLE "Audit Log"."Sign-ins" (
    id        bigint PRIMARY KEY,
    "User ID" uuid CONSTRAINT "Sign-in ""user"" fk" REFERENCES public.users ON DELETE NO ACTION
);
