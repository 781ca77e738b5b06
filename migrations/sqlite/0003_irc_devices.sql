-- IRC gateway devices. An IRC connection is a device like a `chat login`, but it is found
-- again by its name (`account@device` at login; `irc` by default) instead of by a token, so
-- its cursor survives reconnects. NULL for devices made by `chat login`.
ALTER TABLE devices ADD COLUMN irc_name TEXT;
CREATE UNIQUE INDEX devices_irc ON devices(user_id, irc_name) WHERE irc_name IS NOT NULL;
