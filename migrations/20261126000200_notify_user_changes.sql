-- migrate:up
-- Every change to a user's state (created, deleted; a hard DELETE or TRUNCATE too)
-- is announced on the channel `auth_users`, on commit, whoever made it: a replica's
-- DeleteUser, another replica, or SQL run by hand. Servers keep a cache of user
-- states (store/state_cache.py) and drop an entry when its id is announced, so the
-- cache is exact up to the delivery of a notification. The payload is the changed
-- ids separated by commas, or '*' (forget everything) when a statement changed more
-- than 100 of them. Statement-level triggers: a bulk load sends one notification.
CREATE FUNCTION auth_users_notify() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    ids text[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(id::text) INTO ids FROM (SELECT id FROM new_rows LIMIT 101) AS n;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT array_agg(n.id::text) INTO ids FROM (
            SELECT n.id FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
            WHERE n.deleted_at IS DISTINCT FROM o.deleted_at OR n.id IS DISTINCT FROM o.id
            LIMIT 101
        ) AS n;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(id::text) INTO ids FROM (SELECT id FROM old_rows LIMIT 101) AS o;
    ELSE  -- TRUNCATE
        ids := ARRAY['*'];
    END IF;
    IF ids IS NOT NULL THEN
        PERFORM pg_notify(
            'auth_users',
            CASE WHEN cardinality(ids) > 100 THEN '*' ELSE array_to_string(ids, ',') END
        );
    END IF;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER users_notify_insert AFTER INSERT ON users
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION auth_users_notify();
CREATE TRIGGER users_notify_update AFTER UPDATE ON users
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION auth_users_notify();
CREATE TRIGGER users_notify_delete AFTER DELETE ON users
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION auth_users_notify();
CREATE TRIGGER users_notify_truncate AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION auth_users_notify();

-- migrate:down
DROP TRIGGER users_notify_truncate ON users;
DROP TRIGGER users_notify_delete ON users;
DROP TRIGGER users_notify_update ON users;
DROP TRIGGER users_notify_insert ON users;
DROP FUNCTION auth_users_notify();
