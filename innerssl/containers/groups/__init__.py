"""Parameter groups that containers are composed of (data, encoder, SSL method, optimisation, monitoring; cloud
lives in innerssl.cloud.parameters). Each group declares its parameters, validates them (``validate_group``) and
offers the work that needs only them; a container lists the groups it has as base classes."""
