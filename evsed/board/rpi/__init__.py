"""The Raspberry Pi board: real drivers for pilot PWM and sensing, contactor, lock, Modbus meter and RFID reader."""
