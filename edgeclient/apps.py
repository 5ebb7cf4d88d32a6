from django.apps import AppConfig


class EdgeClientConfig(AppConfig):
    name = "edgeclient"
    verbose_name = "Edge client"
