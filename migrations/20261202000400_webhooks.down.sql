-- Takes the webhooks schema of 20261202000400_webhooks.up.sql away, with every endpoint and delivery.
DROP SCHEMA webhooks CASCADE;
