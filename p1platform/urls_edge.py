"""The edge serves no HTTP; Django still wants a URL configuration to check."""

urlpatterns: list = []
