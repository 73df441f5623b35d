"""A small task tracker built the dependency-injector way: FastAPI, SQLAlchemy on SQLite.

``Configuration`` holds the settings, the database is a Singleton, repositories and
services are Factories, endpoints get them through ``@inject`` / ``Provide`` wiring, and
the tests swap them with ``container.<provider>.override(...)``.

enginescope adds a chat: ``Container.engines`` is an ``EngineContainer``, the ``/ws``
WebSocket runs the ``tasks`` agent (which uses ``TaskService``) in the user's own engine,
and the tests use the enginescope pytest plugin. Run it with
``uvicorn --factory examples.existing_app.application:create_app``.
"""
