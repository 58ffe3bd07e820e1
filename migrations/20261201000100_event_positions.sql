-- migrate:up
-- The position of user events (#30): every user_created and user_deleted event
-- takes the next number in the transaction that writes it (UPDATE ... RETURNING on
-- this one row). The row lock is held until that transaction ends, so positions
-- are assigned in commit order and without holes (a rolled-back transaction gives
-- its number back). A follower of the events sees 1, 2, 3, ... and knows it missed
-- one when a number does not come; ExportUserStates reads `last_position` in the
-- same snapshot as the users, so a snapshot is consistent at a position. Writers
-- of user events already serialize at commit (their NOTIFY takes PostgreSQL's
-- notification queue lock), so the lock costs them nothing more.
CREATE TABLE event_position (
    -- Exactly one row.
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_position bigint  NOT NULL
);
INSERT INTO event_position (singleton, last_position) VALUES (true, 0);

-- migrate:down
DROP TABLE event_position;
