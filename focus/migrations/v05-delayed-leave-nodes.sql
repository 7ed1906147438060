-- v4 -> v5: the nodes running delayed leave jobs (focus_delayed_leave.node_id) and how long each
-- is known to be alive: a row whose node is not is adopted by a live node, so that exactly one
-- node runs each job after restarts
CREATE TABLE focus_delayed_leave_node (
	node_id     TEXT   PRIMARY KEY,
	-- Unix milliseconds; the node renews it while it runs and deletes its row when it stops
	alive_until BIGINT NOT NULL
);

CREATE INDEX focus_delayed_leave_node_idx ON focus_delayed_leave (node_id);
