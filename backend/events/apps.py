from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "backend.events"
    label = "events"
