"""Looking at models: the complexity profile (params, MACs, activation memory per layer) and feature-map figures."""

from .profile import ModelProfile, count_params, format_profile, profile_ghost_module, profile_model

__all__ = ["ModelProfile", "count_params", "format_profile", "profile_ghost_module", "profile_model"]
