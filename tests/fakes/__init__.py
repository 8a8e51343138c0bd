"""Register-level fakes of the Pebble's hardware (I2C bus and sensors, UART, ADC) for CPython
tests of the drivers in hw/pebble/."""
