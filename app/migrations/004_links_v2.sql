-- Links v2 (docs/tokens.md): what a token says about its link, kept with each event. A click
-- of a version 1 token is part 'api' with no name or message id (those tokens came from the API),
-- whether recorded now or replayed from a journal written before links v2; rows already in the
-- table before this migration have all three NULL.
ALTER TABLE events ADD COLUMN link_name text;
ALTER TABLE events ADD COLUMN part text CHECK (part IN ('api', 'html', 'text'));
ALTER TABLE events ADD COLUMN message_id text;

COMMENT ON COLUMN events.link_name IS
    'the sender''s name for the link (e.g. hero-cta), from the token; NULL for opens and unnamed links';
COMMENT ON COLUMN events.part IS
    'where the link came from: html or text part of an email (trackd rewrote it), or api (signed one by one); NULL for opens';
COMMENT ON COLUMN events.message_id IS
    'the sender''s message id carried by the token (join key to send logs); NULL when none was given';
COMMENT ON COLUMN events.machine_reason IS
    'why is_machine is true: head, the user agent''s class (scanner, prefetch, bot ...), or honeypot (a link no person sees)';
