"""ORM integrations: declare in the model which columns hold auth-service user ids
(in place of a foreign key into the users table), and every new or changed one is
checked against auth-service before it is written, in one batched lookup per
flush or save.

    auth_client.integrations.sqlalchemy   SQLAlchemy 2.x Session and AsyncSession
                                          (extra: sqlalchemy)
    auth_client.integrations.django       a Django model field and a system check
                                          (extra: django; add it to INSTALLED_APPS)

A reference to a user that does not exist or is deleted fails the write with
`auth_client.UserReferenceError` (a `UserNotFoundError`) naming each column and id;
while auth-service cannot answer, the client's fallback policy decides (FAIL_CLOSED:
`ServiceUnavailableError`, nothing written). See docs/client.md.
"""
