"""The one error type of the data layer."""


class DataError(ValueError):
  """A dataset on disk is missing, malformed or inconsistent.

  The message always names the file or folder at fault, so that a user can fix
  their copy of the data without reading the loader.
  """
