// Module Control.
